-- Leaner event indexes: the visitor index only serves anonymous interest (events joining a
-- lead are found by lead), and no query reads events by kind across leads.
DROP INDEX events_visitor_at;
DROP INDEX events_kind_at;
CREATE INDEX events_anonymous_visitor ON events (visitor_id, at) WHERE lead_id IS NULL AND visitor_id IS NOT NULL;
