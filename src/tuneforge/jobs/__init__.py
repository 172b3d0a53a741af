"""Self-hosted, OpenAI-compatible fine-tuning jobs: uploaded files, a persistent SQLite queue,
and workers that run each job through the pipeline's stages (prepare → train).

    spec.py     JobsConfig, the create-job request, the recipe a job runs, the file check
    store.py    the SQLite queue (files, jobs, events, checkpoints); leases with fencing tokens, recovery
    service.py  upload / create / validate / cancel, apart from HTTP
    worker.py   the worker loop, its heartbeat and the job's bookkeeping, resume after a killed worker
    child.py    a job's training in a process of its own (spawned per job), its Trainer callback
    objects.py  rows as OpenAI API objects
    routes.py   the HTTP routes, mounted into the server (`mount`)

The CLI is cli/jobs.py.
"""
