"""Signed, versioned releases: keys, the python-tuf repository, publishing to disk and broker.

- :mod:`.keys` — ``init_keys``, ``rotate_key``
- :mod:`.repo` — ``Repository`` (metadata on disk, ``releases``, ``refresh_timestamp``)
- :mod:`.publish` — ``publish``, ``push_repo``
- :mod:`.broker` — retained-message push (metadata, chunk indexes, chunks)
"""
