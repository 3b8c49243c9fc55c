-- The W3C traceparent of the request whose saga wrote the event, sent
-- along as a `traceparent` header so a consumer can link to that trace.
-- NULL when traces were not exported.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
