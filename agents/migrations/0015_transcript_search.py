"""Search across transcripts, and the time to first answer audio of a session.

The search index depends on the database. PostgreSQL: a ``search_vector`` column holding
``to_tsvector('simple', text)``, written by a trigger on every insert and update (so inserts, the
data policy's blanking and erasure's updates all reach it, whatever code writes the row), under a
GIN index. Stored rather than an expression index: a query that walks the newest sessions first
rechecks each line's vector, and recomputing ``to_tsvector`` per line made that 4x slower.
SQLite (the embedded mode): an FTS5 table over the same text, an external-content table kept in
step with ``agents_transcriptitem`` by triggers; the ``search_vector`` column stays NULL there.
"""

import django.contrib.postgres.search
from django.db import migrations, models

# The same names as agents/search.py (a migration keeps its own copy: it must not change later).
SQLITE_TABLE = "agents_transcript_fts"
PG_INDEX_NAME = "transcript_search"
SEARCH_CONFIG = "simple"

SQLITE_CREATE = [
    f"CREATE VIRTUAL TABLE {SQLITE_TABLE} USING fts5("
    "text, content='agents_transcriptitem', content_rowid='id', tokenize='unicode61')",
    f"CREATE TRIGGER {SQLITE_TABLE}_insert AFTER INSERT ON agents_transcriptitem BEGIN "
    f"INSERT INTO {SQLITE_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER {SQLITE_TABLE}_delete AFTER DELETE ON agents_transcriptitem BEGIN "
    f"INSERT INTO {SQLITE_TABLE}({SQLITE_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    "END",
    f"CREATE TRIGGER {SQLITE_TABLE}_update AFTER UPDATE OF text ON agents_transcriptitem BEGIN "
    f"INSERT INTO {SQLITE_TABLE}({SQLITE_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {SQLITE_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"INSERT INTO {SQLITE_TABLE}({SQLITE_TABLE}) VALUES ('rebuild')",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {SQLITE_TABLE}_insert",
    f"DROP TRIGGER IF EXISTS {SQLITE_TABLE}_delete",
    f"DROP TRIGGER IF EXISTS {SQLITE_TABLE}_update",
    f"DROP TABLE IF EXISTS {SQLITE_TABLE}",
]


PG_CREATE = [
    "CREATE TRIGGER transcript_search_vector BEFORE INSERT OR UPDATE ON agents_transcriptitem "
    "FOR EACH ROW EXECUTE FUNCTION "
    f"tsvector_update_trigger(search_vector, 'pg_catalog.{SEARCH_CONFIG}', text)",
    f"UPDATE agents_transcriptitem SET search_vector = to_tsvector('{SEARCH_CONFIG}', text)",
    f"CREATE INDEX {PG_INDEX_NAME} ON agents_transcriptitem USING gin (search_vector)",
]
PG_DROP = [
    f"DROP INDEX IF EXISTS {PG_INDEX_NAME}",
    "DROP TRIGGER IF EXISTS transcript_search_vector ON agents_transcriptitem",
]


def create_search_index(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in PG_CREATE:
            schema_editor.execute(statement)
    elif vendor == "sqlite":
        for statement in SQLITE_CREATE:
            schema_editor.execute(statement)


def drop_search_index(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in PG_DROP:
            schema_editor.execute(statement)
    elif vendor == "sqlite":
        for statement in SQLITE_DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0014_conversation_start_and_variables"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="first_audio_ms",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="transcriptitem",
            name="search_vector",
            field=django.contrib.postgres.search.SearchVectorField(editable=False, null=True),
        ),
        migrations.RunPython(create_search_index, drop_search_index),
    ]
