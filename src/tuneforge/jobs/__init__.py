"""Self-hosted, OpenAI-compatible fine-tuning jobs: uploaded files, a persistent SQLite queue,
and workers that run each job through the pipeline's stages (prepare → train).

    spec.py     JobsConfig, the create-job request, the recipe a job runs, the file check
    store.py    the SQLite queue (files, jobs, events, checkpoints); atomic claims, recovery
    service.py  upload / create / validate / cancel, apart from HTTP
    worker.py   the worker loop, its Trainer callback, resume after a killed worker
    objects.py  rows as OpenAI API objects

The HTTP routes are in deploy/server/jobs_routes.py; the CLI in cli_jobs.py.
"""
