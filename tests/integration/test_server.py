"""``ServeProcess`` in this process (the acceptance tests run it as ``jobservice serve``):
what only an insider can provoke, such as the actor system dying under it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from registries import free_port
from waiting import wait_until

from actors.serve import EXIT_ACTORS_DIED, ServeProcess
from model.db import migrations
from model.errors import ConfigError
from model.settings import Settings


def test_the_process_exits_non_zero_when_the_actor_system_dies_and_healthz_says_503_first(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    settings = make_settings(ui_secret="s", listen_port=port)
    migrations.upgrade(settings.database_url)
    process = ServeProcess(settings)
    seen: list[int] = []

    def kill_the_dispatcher() -> None:
        url = f"http://127.0.0.1:{port}/healthz"

        def answers() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, timeout=30)
        assert process.service is not None and process.service._dispatcher is not None
        process.service._dispatcher.stop()
        try:
            seen.append(httpx.get(url, timeout=1).status_code)
        except httpx.TransportError:
            seen.append(0)

    helper = threading.Thread(target=kill_the_dispatcher)
    helper.start()
    assert process.run() == EXIT_ACTORS_DIED
    helper.join(10)
    assert seen == [503]


def test_a_database_behind_its_migrations_stops_the_start(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(migrations.DatabaseBehind):
        ServeProcess(make_settings(ui_secret="s", listen_port=free_port())).run()


def test_a_port_in_use_is_a_config_error_naming_listen_port(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    import socket

    settings = make_settings(ui_secret="s", listen_port=free_port())
    migrations.upgrade(settings.database_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.listen_port))
        taken.listen()
        with pytest.raises(ConfigError, match="listen_port"):
            ServeProcess(settings).run()
