from airdask.cli import main

main()
