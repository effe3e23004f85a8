#!/bin/sh
# Kafka for docker-compose: SASL (SCRAM-SHA-512) for every client, users made when the storage is first
# formatted, the authorizer denying what no ACL allows (`agentlog stack up` in the setup service grants them).
# The controller listens on the container's own loopback only.
set -eu
for principal in ADMIN PRODUCER DASHBOARD SEARCH ANALYTICS READER; do
  eval "test -n \"\${AGENTLOG_KAFKA_${principal}_PASSWORD:-}\"" || { echo "AGENTLOG_KAFKA_${principal}_PASSWORD is not set: see .env" >&2; exit 1; }
done
config=/tmp/server.properties
admin_jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"agentlog_admin\" password=\"${AGENTLOG_KAFKA_ADMIN_PASSWORD}\";"
umask 077
cat > "$config" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=SASL://0.0.0.0:9092,INTERNAL://0.0.0.0:29092,CONTROLLER://127.0.0.1:9093
advertised.listeners=SASL://127.0.0.1:9092,INTERNAL://kafka:29092
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=${admin_jaas}
listener.name.sasl.scram-sha-512.sasl.jaas.config=${admin_jaas}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:agentlog_admin;User:ANONYMOUS
log.dirs=/var/lib/kafka/data
num.partitions=6
auto.create.topics.enable=false
log.retention.hours=-1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  set --
  for principal in ADMIN PRODUCER DASHBOARD SEARCH ANALYTICS READER; do
    name=$(echo "agentlog_${principal}" | tr 'A-Z' 'a-z')
    eval "password=\${AGENTLOG_KAFKA_${principal}_PASSWORD}"
    set -- "$@" --add-scram "SCRAM-SHA-512=[name=${name},password=${password}]"
  done
  /opt/kafka/bin/kafka-storage.sh format --cluster-id="$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \
    -c "$config" "$@"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
