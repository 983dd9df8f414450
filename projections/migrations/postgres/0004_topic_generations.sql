-- The topic generation each stored offset belongs to. The relay recreates a lost
-- topic (a broker that lost its storage) under the next generation and republishes
-- the whole log into it; its offsets start again from 0 and say nothing about
-- the lost topic's. Rows written before this column existed are generation 1,
-- as are messages without a `topic_generation` header.
ALTER TABLE projection_offsets ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;
