"""The semi-supervised (SSMLL) recipes: `cbsa.py` (CBSA) and `cap.py` (CAP), on the shared
`config.py`, `data.py` (splits and views) and `loop.py` (warm-up + semi-supervised phases)."""
