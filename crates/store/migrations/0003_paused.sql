-- When a sandbox was paused (its lifetime clock stops while it is): NULL unless paused.
ALTER TABLE sandboxes ADD COLUMN paused_at INTEGER;
