"""Harvested logs packed per run (airdask.logs.packs, ADR 0016): written, read, replaced,
read while written, and appended by several processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airdask.executors.dask.task_logs import LogWriter
from airdask.logs import log_exists, log_path, read_log
from airdask.logs.packs import INDEX_NAME, PACK_NAME, append_logs, pack_location, packed_logs
from airdask.state import TaskInstanceKey


def key(task_id: str, *, run_id: str = "r1", try_number: int = 1, map_index: int = -1):
    return TaskInstanceKey("d", task_id, run_id, try_number, map_index)


def run_dir(folder: Path, k: TaskInstanceKey) -> Path:
    return folder / pack_location(k)[0]


def test_logs_of_a_run_go_to_one_pack_and_read_back_exactly(tmp_path: Path) -> None:
    a, b, mapped = key("a"), key("b", try_number=2), key("m", map_index=3)
    other_run = key("a", run_id="r2")
    texts = {a: "one\ntwo\n", b: "é ✓ no newline at the end", mapped: "", other_run: "x\n"}
    append_logs(str(tmp_path), list(texts.items()))
    assert sorted(p.name for p in run_dir(tmp_path, a).iterdir()) == [INDEX_NAME, PACK_NAME]
    assert not log_path(tmp_path, a).exists()  # no file, no directory per attempt
    assert packed_logs(str(run_dir(tmp_path, a))) == {
        "task_id=a/attempt=1.log": "one\ntwo\n",
        "task_id=b/attempt=2.log": "é ✓ no newline at the end",
        "task_id=m/map_index=3/attempt=1.log": "",
    }
    messages, lines = read_log(tmp_path, b)
    assert lines == ["é ✓ no newline at the end"]
    assert messages[0].startswith("log file: ") and messages[0].endswith(
        f"{PACK_NAME}, packed as task_id=b/attempt=2.log"
    )
    assert read_log(tmp_path, other_run)[1] == ["x"]
    assert log_exists(tmp_path, mapped) and not log_exists(tmp_path, key("a", try_number=2))
    messages, lines = read_log(tmp_path, key("nope"))
    assert lines == [] and "no log file" in messages[0]
    # A person reading the pack sees which attempt each log is.
    text = (run_dir(tmp_path, a) / PACK_NAME).read_text()
    assert "--- airdask log task_id=a/attempt=1.log (8 bytes) ---\none\ntwo\n" in text


def test_a_log_written_again_replaces_the_first_and_a_file_of_its_own_wins(
    tmp_path: Path,
) -> None:
    a = key("a")
    append_logs(str(tmp_path), [(a, "tail only\n")])
    assert read_log(tmp_path, a)[1] == ["tail only"]  # the index is now cached
    append_logs(str(tmp_path), [(a, "the full log\n"), (key("b"), "b\n")])
    assert read_log(tmp_path, a)[1] == ["the full log"]  # read from where the cache was
    assert read_log(tmp_path, key("b"))[1] == ["b"]
    own = log_path(tmp_path, a)
    own.parent.mkdir(parents=True)
    own.write_text("written by its runner\n")
    messages, lines = read_log(tmp_path, a)
    assert lines == ["written by its runner"] and str(own) in messages[0]


def test_a_run_folder_made_again_is_read_afresh(tmp_path: Path) -> None:
    a = key("a")
    append_logs(str(tmp_path), [(a, "old\n"), (key("gone"), "x\n")])
    assert read_log(tmp_path, a)[1] == ["old"]
    for name in (INDEX_NAME, PACK_NAME):
        (run_dir(tmp_path, a) / name).unlink()
    append_logs(str(tmp_path), [(a, "new\n")])
    assert read_log(tmp_path, a)[1] == ["new"]
    assert not log_exists(tmp_path, key("gone"))


def test_an_index_line_still_being_written_is_not_read_until_it_is_whole(
    tmp_path: Path,
) -> None:
    a, b = key("a"), key("b")
    append_logs(str(tmp_path), [(a, "a\n")])
    index = run_dir(tmp_path, a) / INDEX_NAME
    pack = run_dir(tmp_path, a) / PACK_NAME
    offset = pack.stat().st_size
    with pack.open("ab") as fh:
        fh.write(b"b\n")
    line = f'[{offset}, 2, "task_id=b/attempt=1.log"]\n'
    with index.open("a") as fh:
        fh.write(line[:10])
    assert read_log(tmp_path, a)[1] == ["a"] and not log_exists(tmp_path, b)
    with index.open("a") as fh:
        fh.write(line[10:] + "not json\n")
    assert read_log(tmp_path, b)[1] == ["b"]  # and the stray line is skipped


WRITER = textwrap.dedent(
    """
    import sys
    from airdask.logs.packs import append_logs
    from airdask.state import TaskInstanceKey

    folder, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdin.readline()  # all start at once, so that their appends overlap
    for i in range(0, n, 10):
        append_logs(folder, [
            (TaskInstanceKey("d", f"{name}{j}", "r1", 1, -1), f"{name} {j}\\n" * (j % 7 + 1))
            for j in range(i, i + 10)
        ])
    """
)


@pytest.mark.timeout(60)
def test_processes_appending_to_one_pack_never_mix_their_records(tmp_path: Path) -> None:
    n = 2000
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name, str(n)],
            stdin=subprocess.PIPE,
            text=True,
        )
        for name in ("p", "q", "s")
    ]
    for w in writers:  # each is waiting on its stdin, its imports done
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.close()
    assert [w.wait(timeout=50) for w in writers] == [0, 0, 0]
    logs = packed_logs(str(run_dir(tmp_path, key("p0"))))
    assert len(logs) == 3 * n
    for name in ("p", "q", "s"):
        for j in range(n):
            assert logs[f"task_id={name}{j}/attempt=1.log"] == f"{name} {j}\n" * (j % 7 + 1)


@pytest.mark.timeout(30)
def test_the_log_writer_packs_what_it_is_handed_and_wait_returns_once_it_is_there(
    tmp_path: Path,
) -> None:
    writer = LogWriter(str(tmp_path))
    keys = [key(f"t{i}") for i in range(50)]
    writer.submit([(k, f"log of {k.task_id}\n", None) for k in keys])
    writer.wait(keys[-1])
    assert read_log(tmp_path, keys[-1])[1] == ["log of t49"]
    writer.close()
    assert all(read_log(tmp_path, k)[1] == [f"log of {k.task_id}"] for k in keys)
    assert not any(p.is_dir() for p in run_dir(tmp_path, keys[0]).iterdir())
    assert os.listdir(tmp_path) == ["dag_id=d"]


def test_a_run_whose_pack_cannot_be_written_does_not_lose_the_other_runs_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked, fine = key("a", run_id="blocked"), key("a", run_id="fine")
    run_dir(tmp_path, blocked).parent.mkdir(parents=True)
    run_dir(tmp_path, blocked).write_text("a file where the run's folder would be")
    append_logs(str(tmp_path), [(blocked, "lost\n"), (fine, "kept\n")])
    assert read_log(tmp_path, fine)[1] == ["kept"]
    assert "could not write 1 task log(s)" in caplog.text
