"""The live hub: one LiveStream per name, its readers and packagers. No HTTP, DB or cache code."""
