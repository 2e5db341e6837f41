import pytest

from adapters.settings import PostgresSettings, Settings, SettingsError


def test_defaults_are_the_embedded_mode() -> None:
    settings = Settings.from_env({})
    assert settings.backend == "sqlite"
    assert (settings.host, settings.port, settings.embedded_worker) == ("127.0.0.1", 3000, True)


def test_one_variable_switches_to_postgres() -> None:
    settings = Settings.from_env(
        {"STRIPEMETER_DATABASE_URL": "postgresql://meter:s%40cret@db.internal:6543/billing"}
    )
    assert settings.postgres == PostgresSettings("db.internal", 6543, "meter", "s@cret", "billing")


def test_an_empty_password_does_not_swallow_the_database_name() -> None:
    # Unquoted, "password= dbname=x" makes libpq read the password as "dbname=x"
    # and connect to the default database instead.
    conninfo = PostgresSettings("h", 5432, "postgres", "", "billing").conninfo
    assert "password=''" in conninfo and "dbname=billing" in conninfo


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPEMETER_DATABASE_URL": "mysql://x/y"}, "postgresql://"),
        ({"STRIPEMETER_DATABASE_URL": "postgresql://host"}, "name a database"),
        ({"STRIPEMETER_PORT": "seventy"}, "STRIPEMETER_PORT must be a whole number"),
        ({"STRIPEMETER_PORT": "70000"}, "between 1 and 65535"),
        ({"STRIPEMETER_EMBEDDED_WORKER": "maybe"}, "true or false"),
        ({"STRIPEMETER_BROKER_URL": "kafka://x"}, "must be redis://… or amqp://…"),
        ({"STRIPEMETER_BROKER_QUEUE": "push queue"}, "STRIPEMETER_BROKER_QUEUE must start"),
        ({"STRIPEMETER_BROKER_QUEUE": "1push"}, "STRIPEMETER_BROKER_QUEUE must start"),
        ({"STRIPEMETER_BROKER_QUEUE": "q" * 201}, "at most 200 characters"),
    ],
)
def test_bad_settings_say_which_variable_and_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_broker_and_its_queue() -> None:
    assert (Settings.from_env({}).broker_url, Settings.from_env({}).broker_queue) == (
        None,
        "stripemeter_push",
    )
    settings = Settings.from_env(
        {
            "STRIPEMETER_BROKER_URL": "amqp://guest:guest@rabbit:5672/%2F",
            "STRIPEMETER_BROKER_QUEUE": "billing-eu.push_1",
        }
    )
    assert settings.broker_url == "amqp://guest:guest@rabbit:5672/%2F"
    assert settings.broker_queue == "billing-eu.push_1"


def test_reconciliation_reads_below_stripes_per_endpoint_limit_unless_told() -> None:
    # 25 requests/s per endpoint (and per sandbox account): 20 by default, in either mode.
    assert Settings.from_env({}).reconcile.reads_per_second == 20
    chosen = Settings.from_env({"STRIPEMETER_RECONCILE_READS_PER_SECOND": "95"}).reconcile
    assert chosen.reads_per_second == 95
    pace = chosen.read_pace()
    assert pace is not None and (pace.rate, pace.burst) == (95, 4)
    default_pace = Settings.from_env({}).reconcile.read_pace()
    assert default_pace is not None and (default_pace.rate, default_pace.burst) == (20, 1)
    off = Settings.from_env({"STRIPEMETER_RECONCILE_READS_PER_SECOND": "0"}).reconcile
    assert off.read_pace() is None
    with pytest.raises(SettingsError, match="STRIPEMETER_RECONCILE_READS_PER_SECOND"):
        Settings.from_env({"STRIPEMETER_RECONCILE_READS_PER_SECOND": "-1"})


def test_the_shadow_test_account_is_paced_apart_from_the_live_one() -> None:
    # Another account (a sandbox: 25/s of its own): its own bucket, its own setting.
    default = Settings.from_env({}).reconcile
    live, shadow = default.read_pace(), default.shadow_read_pace()
    assert live is not None and shadow is not None and live is not shadow
    assert (shadow.rate, shadow.burst) == (20, 1)
    chosen = Settings.from_env({"STRIPEMETER_RECONCILE_SHADOW_READS_PER_SECOND": "5"}).reconcile
    assert (chosen.reads_per_second, chosen.shadow_reads_per_second) == (20, 5)
    off = Settings.from_env({"STRIPEMETER_RECONCILE_SHADOW_READS_PER_SECOND": "0"}).reconcile
    assert off.shadow_read_pace() is None and off.read_pace() is not None
    with pytest.raises(SettingsError, match="STRIPEMETER_RECONCILE_SHADOW_READS_PER_SECOND"):
        Settings.from_env({"STRIPEMETER_RECONCILE_SHADOW_READS_PER_SECOND": "x"})


def test_the_projection_polls_are_given_in_milliseconds() -> None:
    default = Settings.from_env({})
    assert (
        default.projection_poll_seconds,
        default.projection_safety_poll_seconds,
        default.projection_batch_interval_seconds,
    ) == (0.05, 1.0, 0.05)
    settings = Settings.from_env(
        {
            "STRIPEMETER_PROJECTION_POLL_MS": "200",
            "STRIPEMETER_PROJECTION_SAFETY_POLL_MS": "5000",
            "STRIPEMETER_PROJECTION_BATCH_INTERVAL_MS": "0",
        }
    )
    assert (
        settings.projection_poll_seconds,
        settings.projection_safety_poll_seconds,
        settings.projection_batch_interval_seconds,
    ) == (0.2, 5.0, 0.0)
    with pytest.raises(SettingsError, match="STRIPEMETER_PROJECTION_POLL_MS must be between 1"):
        Settings.from_env({"STRIPEMETER_PROJECTION_POLL_MS": "0"})


def test_cloudevents_type_prefixes_are_a_list_in_order() -> None:
    assert Settings.from_env({}).cloudevents_type_prefixes == ()
    env = {"STRIPEMETER_CLOUDEVENTS_TYPE_PREFIXES": "com.acme.usage., ,com.acme. ,"}
    assert Settings.from_env(env).cloudevents_type_prefixes == ("com.acme.usage.", "com.acme.")
