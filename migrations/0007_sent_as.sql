-- How an instance was sent when not byte for byte: "sent as X because the destination refused Y".
ALTER TABLE forward_queue ADD COLUMN sent_as TEXT NOT NULL DEFAULT '';
