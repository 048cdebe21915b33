from inboxlab.cli import main

main()
