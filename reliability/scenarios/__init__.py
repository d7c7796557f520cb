"""One module per kind of fault; each exposes `scenarios(suite, quick) -> list[Row]`."""
