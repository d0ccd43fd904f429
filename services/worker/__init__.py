"""The Celery worker: app factory, ingest/delete tasks on named queues, the job runner."""
