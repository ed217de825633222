"""opsflow: the library behind the flows. Plain Python; it never imports Prefect."""
