package io.qp.connect.s3;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.NavigableSet;
import java.util.TreeSet;
import org.apache.avro.Schema;
import org.apache.avro.file.CodecFactory;
import org.apache.avro.file.DataFileWriter;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;

/** The open Avro file and the files waiting for upload of one topic partition. */
final class PartitionWriter {
  /** A closed file waiting for upload. */
  record PendingFile(String key, byte[] data, long startOffset, long endOffset, int records) {}

  final String topic;
  final int partition;
  /** Start offsets of files already in the store: a replay rotates exactly there, so it rewrites the same keys. */
  final NavigableSet<Long> boundaries = new TreeSet<>();
  final Deque<PendingFile> pending = new ArrayDeque<>();
  long lastSeenOffset = -1;

  private int schemaId;
  private long startOffset = -1;
  private long endOffset;
  private long hour;
  private long openedAtMs;
  private int count;
  private String key;
  private ByteArrayOutputStream bytes;
  private DataFileWriter<GenericRecord> writer;

  PartitionWriter(String topic, int partition) {
    this.topic = topic;
    this.partition = partition;
  }

  boolean hasOpenFile() {
    return writer != null;
  }

  int schemaId() {
    return schemaId;
  }

  long hour() {
    return hour;
  }

  int count() {
    return count;
  }

  long openedAtMs() {
    return openedAtMs;
  }

  long startOffset() {
    return startOffset;
  }

  void begin(String prefix, int schemaId, Schema schema, long offset, long timestampMs, long nowMs)
      throws IOException {
    this.schemaId = schemaId;
    this.startOffset = offset;
    this.endOffset = offset;
    this.hour = ObjectKeys.hourOf(timestampMs);
    this.openedAtMs = nowMs;
    this.count = 0;
    this.key = ObjectKeys.key(prefix, topic, partition, offset, timestampMs);
    this.bytes = new ByteArrayOutputStream();
    this.writer = new DataFileWriter<>(new GenericDatumWriter<GenericRecord>(schema));
    writer.setCodec(CodecFactory.deflateCodec(6));
    writer.setMeta("qp.topic", topic);
    writer.setMeta("qp.partition", Integer.toString(partition));
    writer.setMeta("qp.start.offset", Long.toString(offset));
    writer.setMeta("qp.schema.id", Integer.toString(schemaId));
    writer.create(schema, bytes);
  }

  void append(GenericRecord record, long offset) throws IOException {
    writer.append(record);
    endOffset = offset;
    count++;
  }

  /** Close the open file and queue it for upload. */
  void rotate() throws IOException {
    if (writer == null) {
      return;
    }
    writer.close();
    pending.addLast(new PendingFile(key, bytes.toByteArray(), startOffset, endOffset, count));
    writer = null;
    bytes = null;
    startOffset = -1;
  }

  /** Upload queued files in order; a failure leaves the rest queued. Returns files uploaded. */
  int uploadPending(ObjectStore store) throws IOException {
    int uploaded = 0;
    while (!pending.isEmpty()) {
      PendingFile file = pending.peekFirst();
      store.put(file.key(), file.data());
      pending.removeFirst();
      uploaded++;
    }
    return uploaded;
  }

  /** First offset not yet safely in the store, or -1 if everything delivered so far is uploaded. */
  long firstUnsafeOffset() {
    if (!pending.isEmpty()) {
      return pending.peekFirst().startOffset();
    }
    return writer != null ? startOffset : -1;
  }

  /** Forget the open file (not the queued ones): used when its first record could not be written. */
  void dropOpenFile() {
    if (writer != null) {
      try {
        writer.close();
      } catch (IOException | RuntimeException ignored) {
        // nothing of it was queued
      }
    }
    writer = null;
    bytes = null;
    startOffset = -1;
  }

  void discard() {
    if (writer != null) {
      try {
        writer.close();
      } catch (IOException ignored) {
        // the buffer is dropped: its records are redelivered from the committed offset
      }
    }
    writer = null;
    bytes = null;
    pending.clear();
  }
}
