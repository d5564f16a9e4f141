from aldctl.front.cli import main

main()
