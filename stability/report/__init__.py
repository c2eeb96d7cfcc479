"""The report layer: `python -m stability.report` reads result folders (`load`), computes the
summary (`summary`) and the figures listed in `figures` with `analysis`, assembles the page model
(`page`, `sections`, `tables`) and renders it as one offline HTML page (`render`, `templates/`)."""
