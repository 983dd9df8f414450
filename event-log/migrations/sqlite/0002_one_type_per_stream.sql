-- An aggregate id belongs to the type that first used it: an event whose stream
-- already holds events of another type is refused (the command API answers 409).
CREATE TRIGGER events_keep_aggregate_type
BEFORE INSERT ON events
WHEN NEW.sequence > 1
BEGIN
    SELECT RAISE(ABORT, 'aggregate belongs to another aggregate type')
    WHERE EXISTS (SELECT 1 FROM events
                  WHERE aggregate_id = NEW.aggregate_id
                    AND sequence = NEW.sequence - 1
                    AND aggregate_type <> NEW.aggregate_type);
END;
