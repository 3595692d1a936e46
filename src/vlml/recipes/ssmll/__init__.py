"""The semi-supervised (SSMLL) recipes: `cbsa.py` (CBSA) and `cap.py` (CAP), on the shared
`config.py`, `data.py` (splits and views), `loop.py` (warm-up + semi-supervised phases, built
from parts) and `parts.py` (config -> the loop's parts). A new SSMLL method is one recipe file
that builds its model and views and calls `parts.build_loop(...).run()`."""
