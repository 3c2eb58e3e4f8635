"""``bus sim shop``: run the fake shop until Ctrl-C, optionally sending order webhooks."""

from __future__ import annotations

import os
import threading
from typing import cast

import click

from connectors.rest_shop.config import Platform
from connectors.rest_shop.fakeshop.api import build_shop_app
from connectors.rest_shop.fakeshop.sender import Subscription, WebhookSender
from connectors.rest_shop.fakeshop.server import AppServer
from connectors.rest_shop.fakeshop.state import ShopState

__all__ = ["shop_command"]


@click.command("shop")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535))
@click.option("--orders", default=20, show_default=True, type=click.IntRange(0, 100_000),
              help="orders to create at start")
@click.option("--token-env", default="SHOP_API_TOKEN", show_default=True,
              help="environment variable holding the API token the shop accepts")
@click.option("--rate", type=float, help="requests per second the API allows (429 beyond)")
@click.option("--webhook", "webhook_url", help="POST a webhook per order to this URL")
@click.option("--platform", type=click.Choice(["shopify", "woocommerce"]), default="shopify",
              show_default=True, help="how webhooks are signed and named")
@click.option("--secret-env", default="SHOP_WEBHOOK_SECRET", show_default=True,
              help="environment variable holding the webhook signing secret")
@click.option("--duration", type=float, help="stop after N seconds (default: Ctrl-C)")
def shop_command(host: str, port: int, orders: int, token_env: str, rate: float | None,
                 webhook_url: str | None, platform: str, secret_env: str,
                 duration: float | None) -> None:
    """A fake web shop on real HTTP: orders API (Link and page pagination), inventory,
    fulfilments, order status, 429 injection, and signed webhooks that retry."""
    token = os.environ.get(token_env)
    if not token:
        raise click.UsageError(f"set {token_env} to the API token the shop should accept")
    state = ShopState(token=token, rate=rate)
    made = state.add_orders(orders)
    with AppServer(build_shop_app(state), host, port) as server:
        click.echo(f"fake shop on {server.url} with {len(made)} orders "
                   f"(API token from ${token_env})", err=True)
        if webhook_url:
            secret = os.environ.get(secret_env)
            if not secret:
                raise click.UsageError(f"set {secret_env} to the webhook signing secret")
            topic = "orders/create" if platform == "shopify" else "order.created"
            sub = Subscription(webhook_url, cast(Platform, platform), secret.encode(),
                               topic=topic)
            sender = WebhookSender()
            answered = 0
            for order in made:
                attempts = sender.send(sender.delivery(sub, order.render(platform)))
                answered += bool(attempts and attempts[-1].status == 200)
            sender.close()
            click.echo(f"webhooks: {answered}/{len(made)} answered 200 by {webhook_url}",
                       err=True)
        stop = threading.Event()
        try:
            stop.wait(duration)
        except KeyboardInterrupt:
            pass
