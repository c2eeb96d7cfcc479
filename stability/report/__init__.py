"""The report layer: `python -m stability.report` reads result folders, computes the summary with
`analysis` and renders one offline HTML page."""
