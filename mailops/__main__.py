from mailops.cli import main

main()
