-- topic_offsets: the stored next offset of each partition of a topic.
-- $1 topic
SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1
