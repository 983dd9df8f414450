-- An aggregate id belongs to the type that first used it: an event whose stream
-- already holds events of another type is refused (the command API answers 409).
-- Only events after the first of their stream are checked, so creating a stream,
-- the hot path (a message send), costs nothing; a first event of the wrong type
-- collides on (aggregate_id, sequence) anyway.
CREATE FUNCTION events_keep_aggregate_type() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM events
               WHERE aggregate_id = NEW.aggregate_id
                 AND sequence = NEW.sequence - 1
                 AND aggregate_type <> NEW.aggregate_type) THEN
        RAISE EXCEPTION 'aggregate % belongs to another aggregate type', NEW.aggregate_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_keep_aggregate_type
    BEFORE INSERT ON events
    FOR EACH ROW
    WHEN (NEW.sequence > 1)
    EXECUTE FUNCTION events_keep_aggregate_type();
