from bulk_detach.cli import main

main()
