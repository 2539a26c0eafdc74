from ascend_run.cli import main

main()
