"""A DAG for the cluster recipes: a task in the gpu pool, one in the warehouse pool."""

from airdask.dag import DAG, BashTask

with DAG("hello_cluster", description="runs on the recipe's Dask workers") as dag:
    train = BashTask("train", "echo training on $(hostname)", pool="gpu")
    load = BashTask("load", "echo loading from $(hostname)", pool="warehouse")
    train >> load
