// Produces one record of raw bytes to a Kafka topic, for the exercises that need a record no
// marketflow program writes: a schema the scraper does not know yet, a tombstone, poison.
// Run with Kafka's own jars (the `produce` helper of workshop/env.sh does):
//
//   java -cp "$KAFKA_LIBS/*" workshop/tools/Produce.java TOPIC[:PARTITION] KEY VALUE [NAME=VALUE...]
//
// KEY and VALUE are hex ("0000000001c2…"), @FILE (the file's bytes), or null (no bytes at all:
// a null value is a tombstone). NAME=VALUE pairs become headers. Without :PARTITION, Kafka's Java
// partitioner picks one (murmur2 of the key), which is not librdkafka's (CRC32): give the
// partition to land beside the records our programs wrote for the same key. It produces with
// acks=all and idempotence, as our programs do, and prints where the record landed.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Produce {
    static byte[] bytes(String arg) throws Exception {
        if (arg.equals("null")) return null;
        if (arg.startsWith("@")) return Files.readAllBytes(Path.of(arg.substring(1)));
        return HexFormat.of().parseHex(arg);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Produce.java TOPIC[:PARTITION] KEY VALUE [NAME=VALUE...]; KEY, VALUE: hex, @FILE or null");
            System.exit(2);
        }
        String topic = args[0];
        Integer partition = null;
        int colon = topic.lastIndexOf(':');
        if (colon > 0) {
            partition = Integer.valueOf(topic.substring(colon + 1));
            topic = topic.substring(0, colon);
        }
        String servers = System.getenv().getOrDefault("MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS",
                "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094");
        Properties props = new Properties();
        props.put("bootstrap.servers", servers);
        props.put("acks", "all");
        props.put("enable.idempotence", "true");
        props.put("max.request.size", "16777216");
        props.put("delivery.timeout.ms", "30000");
        props.put("max.block.ms", "10000");
        props.put("request.timeout.ms", "20000");
        ProducerRecord<byte[], byte[]> record =
                new ProducerRecord<>(topic, partition, bytes(args[1]), bytes(args[2]));
        for (int i = 3; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq < 1) throw new IllegalArgumentException("a header is NAME=VALUE, got " + args[i]);
            record.headers().add(args[i].substring(0, eq), args[i].substring(eq + 1).getBytes(StandardCharsets.UTF_8));
        }
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            RecordMetadata meta = producer.send(record).get();
            System.out.printf("produced to %s partition %d offset %d%n", meta.topic(), meta.partition(), meta.offset());
        } catch (java.util.concurrent.ExecutionException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            System.out.printf("refused: %s: %s%n", cause.getClass().getSimpleName(), cause.getMessage());
            System.exit(1);
        }
    }
}
