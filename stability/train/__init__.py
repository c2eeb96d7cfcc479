"""The trial engine: one trial (or a fused group of trials) trained and evaluated with torch and
timm, no Ray. `python -m stability.train` runs one trial from the shell; the sweep calls
`stability.train.engine.run_trial` inside its Ray trials. Importing this package is cheap (no torch)."""
