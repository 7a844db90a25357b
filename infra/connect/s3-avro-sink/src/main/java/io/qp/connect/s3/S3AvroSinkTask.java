package io.qp.connect.s3;

import java.io.IOException;
import java.util.Collection;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.ErrantRecordReporter;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** One task: see {@link SinkCore}. Values must be raw bytes (ByteArrayConverter). */
public class S3AvroSinkTask extends SinkTask {
  private static final Logger LOG = LoggerFactory.getLogger(S3AvroSinkTask.class);
  private S3AvroSinkConfig config;
  private S3ObjectStore store;
  private SinkCore core;
  private ErrantRecordReporter reporter;

  @Override
  public String version() {
    return Version.VERSION;
  }

  @Override
  public void start(Map<String, String> props) {
    config = new S3AvroSinkConfig(props);
    store = new S3ObjectStore(config);
    core = new SinkCore(store, new RegistrySchemaSource(config.registryUrl(), config.registryUserInfo()), config.prefix(), config.flushSize(),
        config.rotateIntervalMs(), System::currentTimeMillis);
    reporter = context.errantRecordReporter();
    if (reporter == null) {
      LOG.warn("no dead-letter queue configured (errors.tolerance=all + errors.deadletterqueue.topic.name): "
          + "an undecodable record will stop this task");
    }
  }

  @Override
  public void open(Collection<TopicPartition> partitions) {
    for (TopicPartition tp : partitions) {
      try {
        core.open(tp.topic(), tp.partition());
      } catch (IOException e) {
        throw new ConnectException("cannot list existing files of " + tp + ": " + e.getMessage(), e);
      }
    }
  }

  @Override
  public void close(Collection<TopicPartition> partitions) {
    for (TopicPartition tp : partitions) {
      core.close(tp.topic(), tp.partition());
    }
  }

  @Override
  public void put(Collection<SinkRecord> records) {
    long before = core.filesUploaded();
    try {
      for (SinkRecord r : records) {
        Object value = r.value();
        if (value != null && !(value instanceof byte[])) {
          throw new DataException("value of " + r.topic() + "-" + r.kafkaPartition() + "@" + r.kafkaOffset()
              + " is " + value.getClass().getName() + "; configure value.converter=ByteArrayConverter");
        }
        core.put(r.topic(), r.kafkaPartition(), r.kafkaOffset(), r.timestamp(), (byte[]) value, r, this::report);
      }
      core.tick();
    } catch (IOException e) {
      LOG.warn("transient failure (registry, upload or dead-letter write); Connect redelivers after {} ms: {}",
          config.retryBackoffMs(), e.getMessage());
      context.timeout(config.retryBackoffMs());
      throw new RetriableException(e);
    }
    if (core.filesUploaded() > before) {
      context.requestCommit();
    }
  }

  private void report(Object original, BadRecordException error) throws IOException {
    SinkRecord r = (SinkRecord) original;
    String where = r.topic() + "-" + r.kafkaPartition() + "@" + r.kafkaOffset();
    if (reporter == null) {
      throw new DataException("undecodable record " + where + ": " + error.getMessage(), error);
    }
    LOG.warn("sending undecodable record {} to the dead-letter topic: {}", where, error.getMessage());
    try {
      reporter.report(r, error).get(30, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while dead-lettering " + where, e);
    } catch (Exception e) { // the DLQ write failed or timed out: transient, the batch is redelivered
      throw new IOException("could not dead-letter " + where + " (will retry): " + e.getMessage(), e);
    }
  }

  @Override
  public Map<TopicPartition, OffsetAndMetadata> preCommit(Map<TopicPartition, OffsetAndMetadata> current) {
    try {
      core.tick();
    } catch (IOException e) {
      LOG.warn("upload failed during commit; committing only uploaded offsets: {}", e.getMessage());
    }
    Map<TopicPartition, OffsetAndMetadata> safe = new HashMap<>();
    for (Map.Entry<TopicPartition, OffsetAndMetadata> e : current.entrySet()) {
      TopicPartition tp = e.getKey();
      long offset = core.committable(tp.topic(), tp.partition(), e.getValue().offset());
      safe.put(tp, new OffsetAndMetadata(offset));
    }
    return safe;
  }

  @Override
  public void stop() {
    if (store != null) {
      store.close();
    }
  }
}
