"""The stream deployment: a Faust app serving the model over Kafka topics.

* settings.py  -- ``StreamSettings``: every knob, validated; ``to_dict()`` for meta.json
* app.py       -- the Faust app + agent (requests -> model -> predictions, bad input -> DLQ)
* fetchwait.py -- the one override of Faust: the consumer fetch wait it hard-codes (1500 ms)
* launch.py    -- ``start(sup, settings, run_dir, bootstrap=, cpus=)``: topics, workers, readiness
* measure.py   -- the measurements behind the defaults (prints figures)
* ``python -m services.stream worker --settings FILE`` runs one worker process
"""
