-- insert_dead_letters: park records the worker will never apply (undecodable, or
-- refused by Postgres for their data), with why, in the transaction that moves the
-- partition's offset past them.
-- $1 topic, $2 partition, $3 offsets, $4 keys, $5 values, $6 errors
INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, key, value, error)
SELECT $1, $2, letter.kafka_offset, letter.key, letter.value, letter.error
FROM UNNEST($3::int8[], $4::bytea[], $5::bytea[], $6::text[]) AS letter (kafka_offset, key, value, error)
