from guard.testing.leadterra.serve import main

raise SystemExit(main())
