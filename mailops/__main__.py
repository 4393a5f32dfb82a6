from mailops.entry import main

main()
