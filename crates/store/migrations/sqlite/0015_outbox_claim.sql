-- The dispatcher claims the oldest pending messages: an index of the pending ones in id
-- order lets a claim read its 200 rows and stop, instead of collecting every pending
-- message due by now and sorting them.
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending_id ON outbox (id) WHERE done_at IS NULL;
