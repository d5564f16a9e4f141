from aldctl.cli import main

main()
