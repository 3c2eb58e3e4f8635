#!/bin/sh
# deploy/offline: for trials on hosts without Docker Hub only (docs/deploy.md).
set -e
(
  rabbitmqctl -q await_startup --timeout 120
  rabbitmqctl -q add_user "$RABBITMQ_DEFAULT_USER" "$RABBITMQ_DEFAULT_PASS" 2>/dev/null || true
  rabbitmqctl -q set_user_tags "$RABBITMQ_DEFAULT_USER" administrator
  rabbitmqctl -q set_permissions -p / "$RABBITMQ_DEFAULT_USER" ".*" ".*" ".*"
) &
exec rabbitmq-server
