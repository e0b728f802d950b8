"""Everything Kafka-aware, and the composition root: worker, Faust app, commands, config, metrics."""
