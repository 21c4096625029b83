"""Where studies live and what they record.

``storage`` parses a ``--storage`` URL into a ``Location`` and opens it (``storage_checks``
looks before anything is written, ``reconnect`` waits for a database that went away);
``lifecycle`` creates or resumes a study with its sampler and pruner and counts its trials;
``protocol`` owns every key written on a study or a trial (binding settings, seeds, attribute
names); ``baseline`` queues the tutorial's own configuration; ``stale`` closes trials a dead
worker left RUNNING; ``errors`` holds ``UsageError``, a user's mistake (``StudyError`` is one).
"""
