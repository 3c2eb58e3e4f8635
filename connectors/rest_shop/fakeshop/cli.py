"""``bus sim shop``: run the fake shop until Ctrl-C, optionally sending order webhooks."""

from __future__ import annotations

import os
from typing import cast

import click

from connectors.rest_shop.config import Platform
from connectors.rest_shop.fakeshop.api import build_shop_app
from connectors.rest_shop.fakeshop.sender import Subscription, WebhookSender
from connectors.rest_shop.fakeshop.server import AppServer
from connectors.rest_shop.fakeshop.state import SCENARIO_SKUS, ShopState
from integration_bus.connector import stop_on_signals, wait_for_stop

__all__ = ["DEFAULT_SECRET", "DEFAULT_TOKEN", "shop_command"]

#: the token config/bus.yaml's shop sinks send when SHOP_API_TOKEN is unset, and the secret its
#: webhook receiver checks when SHOP_WEBHOOK_SECRET is unset: by hand, the fake and the reference
#: config agree without any variable set
DEFAULT_TOKEN = "demo-token"
DEFAULT_SECRET = "demo-webhook-secret"


@click.command("shop")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535))
@click.option("--orders", default=20, show_default=True, type=click.IntRange(0, 100_000),
              help="orders to create at start, of the reference scenario's SKUs (TSHIRT-BLK-M, "
                   "MUG-WHITE, ...)")
@click.option("--token-env", default="SHOP_API_TOKEN", show_default=True,
              help="environment variable holding the API token the shop accepts (unset: "
                   f"{DEFAULT_TOKEN!r}, the token config/bus.yaml sends by default)")
@click.option("--rate", type=float, help="requests per second the API allows (429 beyond)")
@click.option("--webhook", "webhook_url", help="POST a webhook per order to this URL")
@click.option("--platform", type=click.Choice(["shopify", "woocommerce"]), default="shopify",
              show_default=True, help="how webhooks are signed and named")
@click.option("--secret-env", default="SHOP_WEBHOOK_SECRET", show_default=True,
              help="environment variable holding the webhook signing secret (unset: "
                   f"{DEFAULT_SECRET!r}, the secret config/bus.yaml checks by default)")
@click.option("--duration", type=float, help="stop after N seconds (default: Ctrl-C)")
def shop_command(host: str, port: int, orders: int, token_env: str, rate: float | None,
                 webhook_url: str | None, platform: str, secret_env: str,
                 duration: float | None) -> None:
    """A fake web shop on real HTTP: orders API (Link and page pagination), inventory,
    fulfilments, order status, 429 injection, and signed webhooks that retry. Stops on Ctrl-C,
    SIGTERM or after --duration, exit 0."""
    token = os.environ.get(token_env) or DEFAULT_TOKEN
    where = f"${token_env}" if os.environ.get(token_env) else f"{token_env} unset: {token!r}"
    state = ShopState(token=token, rate=rate)
    made = state.add_orders(orders, skus=SCENARIO_SKUS)
    # `kill` or Ctrl-C stops it, exit 0: handled from before its server and ready line exist
    with stop_on_signals() as stop, AppServer(build_shop_app(state), host, port) as server:
        click.echo(f"fake shop on {server.url} with {len(made)} orders (API token: {where})",
                   err=True)
        if webhook_url:
            secret = os.environ.get(secret_env) or DEFAULT_SECRET
            topic = "orders/create" if platform == "shopify" else "order.created"
            sub = Subscription(webhook_url, cast(Platform, platform), secret.encode(),
                               topic=topic)
            sender = WebhookSender()
            answered = 0
            for order in made:
                if stop.is_set():
                    break
                attempts = sender.send(sender.delivery(sub, order.render(platform)))
                answered += bool(attempts and attempts[-1].status == 200)
            sender.close()
            click.echo(f"webhooks: {answered}/{len(made)} answered 200 by {webhook_url}",
                       err=True)
        wait_for_stop(stop, duration)  # in slices: the handler runs whichever thread got it
