-- Study lists read counts kept with the rows instead of counting instances and series for
-- each study listed (2,000 instance rows for a list of 100 studies of 20): each series keeps
-- how many instances are filed under it, each study how many series and instances. Kept by
-- triggers, so no code path that files, moves or removes an instance can forget them.
ALTER TABLE series ADD COLUMN instance_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE studies ADD COLUMN series_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE studies ADD COLUMN instance_count INTEGER NOT NULL DEFAULT 0;

UPDATE series SET instance_count =
    (SELECT count(*) FROM instances i WHERE i.series_instance_uid = series.series_instance_uid);
UPDATE studies SET
    series_count = (SELECT count(*) FROM series se
                     WHERE se.study_instance_uid = studies.study_instance_uid),
    instance_count = (SELECT coalesce(sum(se.instance_count), 0) FROM series se
                       WHERE se.study_instance_uid = studies.study_instance_uid);

-- A series never changes study (an instance naming another study is filed under its series'
-- study, with a finding), and series are not removed.
CREATE TRIGGER series_count_insert AFTER INSERT ON series BEGIN
    UPDATE studies SET series_count = series_count + 1
     WHERE study_instance_uid = NEW.study_instance_uid;
END;

CREATE TRIGGER instances_count_insert AFTER INSERT ON instances BEGIN
    UPDATE series SET instance_count = instance_count + 1
     WHERE series_instance_uid = NEW.series_instance_uid;
    UPDATE studies SET instance_count = instance_count + 1
     WHERE study_instance_uid = (SELECT study_instance_uid FROM series
                                  WHERE series_instance_uid = NEW.series_instance_uid);
END;

CREATE TRIGGER instances_count_delete AFTER DELETE ON instances BEGIN
    UPDATE series SET instance_count = instance_count - 1
     WHERE series_instance_uid = OLD.series_instance_uid;
    UPDATE studies SET instance_count = instance_count - 1
     WHERE study_instance_uid = (SELECT study_instance_uid FROM series
                                  WHERE series_instance_uid = OLD.series_instance_uid);
END;

CREATE TRIGGER instances_count_move AFTER UPDATE OF series_instance_uid ON instances
WHEN OLD.series_instance_uid IS NOT NEW.series_instance_uid BEGIN
    UPDATE series SET instance_count = instance_count - 1
     WHERE series_instance_uid = OLD.series_instance_uid;
    UPDATE studies SET instance_count = instance_count - 1
     WHERE study_instance_uid = (SELECT study_instance_uid FROM series
                                  WHERE series_instance_uid = OLD.series_instance_uid);
    UPDATE series SET instance_count = instance_count + 1
     WHERE series_instance_uid = NEW.series_instance_uid;
    UPDATE studies SET instance_count = instance_count + 1
     WHERE study_instance_uid = (SELECT study_instance_uid FROM series
                                  WHERE series_instance_uid = NEW.series_instance_uid);
END;

-- What a study list shows of each series (its stations and names in series order), read from
-- the index alone.
CREATE INDEX series_listing ON series
    (study_instance_uid, series_number, first_received_at, series_description, station_name);
