"""Stream consumers (`modelport stream`): messages from a broker in, predictions out.

`broker` is the contract each broker module fills (`kafka_topics`, `redis_streams`,
`nats_jetstream`); `addresses` turns a `--source`/`--sink` URL into one of them; `formats`
decodes a message into an inference request and encodes the answer (OIP JSON, JSON records,
Avro); `consumer` runs the loop: receive, micro-batch through the model's batcher, produce,
dead-letter what cannot be answered, and acknowledge only what the sink acknowledged.
"""
