"""The HTTP intake of the live engine (FastAPI): ``engine.intake.app.create_app``."""
