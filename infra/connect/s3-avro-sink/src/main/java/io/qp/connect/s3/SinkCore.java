package io.qp.connect.s3;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;
import java.util.function.LongSupplier;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Connect-independent sink logic: decode Confluent-framed Avro, append to one open file per topic partition,
 * rotate on record count, schema change, hour change, elapsed time or a known replay boundary, upload in
 * order, and report which offsets are safe to commit (only those whose data is uploaded).
 */
public final class SinkCore {
  /**
   * Receives records that can never be written (the task sends them to the dead-letter topic). An IOException
   * means the dead-letter write itself failed: the record is redelivered and reported again.
   */
  public interface ErrantSink {
    void report(Object originalRecord, BadRecordException error) throws IOException;
  }

  private final ObjectStore store;
  private final SchemaSource schemas;
  private final String prefix;
  private final int flushSize;
  private final long rotateIntervalMs;
  private final LongSupplier clock;
  private final Map<String, PartitionWriter> writers = new HashMap<>();
  private long filesUploaded;

  public SinkCore(ObjectStore store, SchemaSource schemas, String prefix, int flushSize, long rotateIntervalMs,
      LongSupplier clock) {
    this.store = store;
    this.schemas = schemas;
    this.prefix = prefix;
    this.flushSize = flushSize;
    this.rotateIntervalMs = rotateIntervalMs;
    this.clock = clock;
  }

  private static String id(String topic, int partition) {
    return topic + "\u0000" + partition;
  }

  /** Start (or restart) a partition: learn the start offsets of files already in the store. */
  public void open(String topic, int partition) throws IOException {
    PartitionWriter w = new PartitionWriter(topic, partition);
    for (String key : store.list(ObjectKeys.topicPrefix(prefix, topic))) {
      long start = ObjectKeys.startOffsetOf(key, topic, partition);
      if (start >= 0) {
        w.boundaries.add(start);
      }
    }
    PartitionWriter old = writers.put(id(topic, partition), w);
    if (old != null) {
      old.discard();
    }
  }

  /** Drop a partition's unuploaded data (it is redelivered from the committed offset to whoever owns it). */
  public void close(String topic, int partition) {
    PartitionWriter w = writers.remove(id(topic, partition));
    if (w != null) {
      w.discard();
    }
  }

  /**
   * Add one record. Any problem of this one record (framing, unknown schema id, a registry schema that does not
   * parse, undecodable or unwritable Avro, any runtime exception while handling it) sends it to {@code errant}
   * with the reason and processing continues: one record can never stop the task. An IOException means
   * something transient failed (registry unreachable or 401/403/429/5xx, an upload, the dead-letter write):
   * the same records are delivered again and those already handled are skipped by offset.
   */
  public void put(String topic, int partition, long offset, Long timestampMs, byte[] value, Object original,
      ErrantSink errant) throws IOException {
    PartitionWriter w = writers.get(id(topic, partition));
    if (w == null) {
      open(topic, partition);
      w = writers.get(id(topic, partition));
    }
    if (offset <= w.lastSeenOffset) {
      filesUploaded += w.uploadPending(store); // redelivered after a failed upload: retry the upload only
      return;
    }
    GenericRecord record;
    int schemaId;
    Schema schema;
    try {
      schemaId = WireFormat.schemaId(value);
      schema = schemas.byId(schemaId);
      record = decode(schema, value);
    } catch (BadRecordException e) {
      deadLetter(w, offset, original, e, errant);
      return;
    } catch (RuntimeException e) { // e.g. SchemaParseException from a schema source: still this record's problem
      deadLetter(w, offset, original, new BadRecordException("record could not be decoded: " + e, e), errant);
      return;
    }
    long now = clock.getAsLong();
    long ts = timestampMs != null && timestampMs >= 0 ? timestampMs : now;
    if (w.hasOpenFile() && (w.schemaId() != schemaId || w.hour() != ObjectKeys.hourOf(ts)
        || w.boundaries.contains(offset))) {
      w.rotate();
    }
    try {
      if (!w.hasOpenFile()) {
        w.begin(prefix, schemaId, schema, offset, ts, now);
      }
      w.append(record, offset);
    } catch (RuntimeException e) { // Avro refused to write it (the open file stays consistent: append is atomic)
      if (w.hasOpenFile() && w.count() == 0) {
        w.dropOpenFile(); // a file begun for this record only; queued files stay queued
      }
      deadLetter(w, offset, original, new BadRecordException("record could not be written as Avro: " + e, e),
          errant);
      return;
    }
    w.lastSeenOffset = offset;
    if (w.count() >= flushSize || w.boundaries.contains(offset + 1)) {
      w.rotate();
    }
    filesUploaded += w.uploadPending(store);
  }

  private static void deadLetter(PartitionWriter w, long offset, Object original, BadRecordException e,
      ErrantSink errant) throws IOException {
    errant.report(original, e); // throws IOException if the dead-letter write failed: redelivered, reported again
    w.lastSeenOffset = offset;
  }

  /** Rotate files open longer than the rotation interval and upload everything queued. */
  public void tick() throws IOException {
    long now = clock.getAsLong();
    IOException failure = null;
    for (PartitionWriter w : writers.values()) {
      if (w.hasOpenFile() && now - w.openedAtMs() >= rotateIntervalMs) {
        w.rotate();
      }
      try {
        filesUploaded += w.uploadPending(store);
      } catch (IOException e) {
        failure = e;
      }
    }
    if (failure != null) {
      throw failure;
    }
  }

  /**
   * The offset to commit for a partition whose consumer position is {@code current}: the first offset whose
   * data is not yet uploaded, or {@code current} when everything delivered is safely stored.
   */
  public long committable(String topic, int partition, long current) {
    PartitionWriter w = writers.get(id(topic, partition));
    if (w == null) {
      return current;
    }
    long unsafe = w.firstUnsafeOffset();
    return unsafe < 0 ? current : Math.min(unsafe, current);
  }

  public long filesUploaded() {
    return filesUploaded;
  }

  static GenericRecord decode(Schema schema, byte[] value) throws BadRecordException {
    try {
      BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(value, WireFormat.HEADER_LENGTH,
          value.length - WireFormat.HEADER_LENGTH, null);
      GenericRecord record = new GenericDatumReader<GenericRecord>(schema).read(null, decoder);
      if (!decoder.isEnd()) {
        throw new BadRecordException("record has trailing bytes after its Avro datum");
      }
      return record;
    } catch (IOException | AvroRuntimeException | IndexOutOfBoundsException | NegativeArraySizeException
        | ClassCastException e) {
      throw new BadRecordException("record is not valid Avro for its schema: " + e, e);
    }
  }
}
