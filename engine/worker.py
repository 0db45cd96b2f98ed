"""The app module workers and beat start from: ``celery -A engine.worker worker -Q <service>``."""

from engine.app import create_app

app = create_app()
