package io.qp.connect.s3;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.Schema;
import org.apache.avro.SchemaBuilder;
import org.apache.avro.file.DataFileReader;
import org.apache.avro.file.SeekableByteArrayInput;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.junit.jupiter.api.Test;

class SinkCoreTest {
  static final Schema SCHEMA = SchemaBuilder.record("R").fields().requiredString("run_id").endRecord();
  static final long T0 = 1_763_900_000_000L; // 2025-11-23T12:13:20Z
  static final String TOPIC = "vqe_result_v3.sto3g-jw-uccsd-sv-exact-cpu";

  /** In-memory store; can be told to fail uploads. */
  static final class MemoryStore implements ObjectStore {
    final Map<String, byte[]> objects = new TreeMap<>();
    int puts;
    boolean failing;

    @Override
    public void put(String key, byte[] data) throws IOException {
      if (failing) {
        throw new IOException("S3 down");
      }
      puts++;
      objects.put(key, data);
    }

    @Override
    public List<String> list(String prefix) {
      return objects.keySet().stream().filter(k -> k.startsWith(prefix)).toList();
    }
  }

  static byte[] framed(int schemaId, String runId) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    out.write(0);
    out.write(ByteBuffer.allocate(4).putInt(schemaId).array());
    BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
    GenericRecord r = new GenericData.Record(SCHEMA);
    r.put("run_id", runId);
    new GenericDatumWriter<GenericRecord>(SCHEMA).write(r, enc);
    enc.flush();
    return out.toByteArray();
  }

  static List<String> runIds(byte[] file) throws IOException {
    List<String> ids = new ArrayList<>();
    try (DataFileReader<GenericRecord> reader =
        new DataFileReader<>(new SeekableByteArrayInput(file), new GenericDatumReader<>())) {
      for (GenericRecord r : reader) {
        ids.add(r.get("run_id").toString());
      }
    }
    return ids;
  }

  final MemoryStore store = new MemoryStore();
  final AtomicLong now = new AtomicLong(T0);
  final List<String> errant = new ArrayList<>();
  final SchemaSource schemas = id -> {
    if (id != 7) {
      throw new BadRecordException("schema id " + id + " is unknown");
    }
    return SCHEMA;
  };

  SinkCore core(int flushSize) {
    return new SinkCore(store, schemas, "raw", flushSize, 10_000, now::get);
  }

  void put(SinkCore core, long offset, byte[] value) throws IOException {
    core.put(TOPIC, 0, offset, T0, value, "rec@" + offset, (orig, e) -> errant.add(orig + ": " + e.getMessage()));
  }

  @Test
  void wireFormatHeaderIsParsedAndBadHeadersRejected() throws Exception {
    assertEquals(7, WireFormat.schemaId(framed(7, "a")));
    assertThrows(BadRecordException.class, () -> WireFormat.schemaId(new byte[] {1, 0, 0, 0, 7, 2}));
    assertThrows(BadRecordException.class, () -> WireFormat.schemaId(new byte[] {0, 0}));
    assertThrows(BadRecordException.class, () -> WireFormat.schemaId(null));
  }

  @Test
  void keysAreDeterministicAndParseBack() {
    String key = ObjectKeys.key("raw", TOPIC, 2, 150, T0);
    assertEquals("raw/topics/" + TOPIC + "/year=2025/month=11/day=23/hour=12/" + TOPIC + "+2+0000000000000000150.avro",
        key);
    assertEquals(150, ObjectKeys.startOffsetOf(key, TOPIC, 2));
    assertEquals(-1, ObjectKeys.startOffsetOf(key, TOPIC, 1));
  }

  @Test
  void rotatesOnFlushSizeAndCommitsOnlyUploadedOffsets() throws Exception {
    SinkCore core = core(3);
    core.open(TOPIC, 0);
    for (long o = 0; o < 5; o++) {
      put(core, o, framed(7, "run-" + o));
    }
    assertEquals(1, store.objects.size());
    assertEquals(List.of("run-0", "run-1", "run-2"), runIds(store.objects.values().iterator().next()));
    assertEquals(3, core.committable(TOPIC, 0, 5)); // 3 and 4 are still in the open file
    now.addAndGet(10_000);
    core.tick(); // time-based rotation
    assertEquals(2, store.objects.size());
    assertEquals(5, core.committable(TOPIC, 0, 5));
  }

  @Test
  void badRecordsGoToTheErrantSinkAndGoodOnesStillLand() throws Exception {
    SinkCore core = core(2);
    core.open(TOPIC, 0);
    put(core, 0, framed(7, "a"));
    put(core, 1, new byte[] {9, 9, 9, 9, 9, 9});
    put(core, 2, framed(8, "unknown-schema"));
    byte[] truncated = framed(7, "b");
    put(core, 3, java.util.Arrays.copyOf(truncated, truncated.length - 1));
    put(core, 4, framed(7, "c"));
    assertEquals(3, errant.size());
    assertTrue(errant.get(0).startsWith("rec@1: record value starts with magic byte 9"));
    assertTrue(errant.get(1).contains("schema id 8 is unknown"));
    assertEquals(List.of("a", "c"), runIds(store.objects.values().iterator().next()));
  }

  @Test
  void anyRuntimeExceptionOfOneRecordIsDeadLetteredAndTheNextRecordsLand() throws Exception {
    // the registry handed back a schema that does not parse: the SchemaParseException must not stop the task
    SchemaSource parseFailure = id -> {
      if (id == 9) {
        return new Schema.Parser().parse("{\"type\": \"record\", \"name\": \"broken\"");
      }
      if (id == 10) {
        throw new IllegalStateException("unexpected");
      }
      return SCHEMA;
    };
    SinkCore core = new SinkCore(store, parseFailure, "raw", 3, 10_000, now::get);
    core.open(TOPIC, 0);
    put(core, 0, framed(7, "a"));
    put(core, 1, framed(9, "broken-schema"));
    put(core, 2, framed(10, "runtime-failure"));
    put(core, 3, framed(7, "b"));
    put(core, 4, framed(7, "c"));
    assertEquals(2, errant.size());
    assertTrue(errant.get(0).startsWith("rec@1: record could not be decoded: org.apache.avro.SchemaParseException"),
        errant.get(0));
    assertTrue(errant.get(1).startsWith("rec@2: record could not be decoded: java.lang.IllegalStateException"));
    assertEquals(List.of("a", "b", "c"), runIds(store.objects.values().iterator().next()));
    assertEquals(5, core.committable(TOPIC, 0, 5));
    put(core, 1, framed(9, "broken-schema")); // redelivered after a restart: already handled, not reported twice
    assertEquals(2, errant.size());
  }

  @Test
  void aFailedDeadLetterWriteIsRetriedNotSkipped() throws Exception {
    SinkCore core = core(10);
    core.open(TOPIC, 0);
    List<String> reported = new ArrayList<>();
    SinkCore.ErrantSink failing = (orig, e) -> {
      throw new IOException("DLQ unreachable");
    };
    core.put(TOPIC, 0, 0, T0, framed(7, "a"), "rec@0", failing);
    assertThrows(IOException.class, () -> core.put(TOPIC, 0, 1, T0, new byte[] {9, 9, 9, 9, 9, 9}, "rec@1", failing));
    core.put(TOPIC, 0, 1, T0, new byte[] {9, 9, 9, 9, 9, 9}, "rec@1", (orig, e) -> reported.add((String) orig));
    assertEquals(List.of("rec@1"), reported);
  }

  @Test
  void failedUploadKeepsDataAndRedeliveryIsNotDuplicated() throws Exception {
    SinkCore core = core(2);
    core.open(TOPIC, 0);
    store.failing = true;
    put(core, 0, framed(7, "a"));
    assertThrows(IOException.class, () -> put(core, 1, framed(7, "b")));
    assertEquals(0, core.committable(TOPIC, 0, 2));
    store.failing = false;
    put(core, 0, framed(7, "a")); // Connect redelivers the batch
    put(core, 1, framed(7, "b"));
    assertEquals(1, store.objects.size());
    assertEquals(List.of("a", "b"), runIds(store.objects.values().iterator().next()));
    assertEquals(2, core.committable(TOPIC, 0, 2));
  }

  @Test
  void replayAfterRestartRewritesTheSameKeysEvenIfRotationWasTimeBased() throws Exception {
    SinkCore first = core(100);
    first.open(TOPIC, 0);
    for (long o = 0; o < 3; o++) {
      put(first, o, framed(7, "run-" + o));
    }
    now.addAndGet(10_000);
    first.tick(); // file [0..2] by time
    for (long o = 3; o < 5; o++) {
      put(first, o, framed(7, "run-" + o));
    }
    now.addAndGet(10_000);
    first.tick(); // file [3..4] by time; then the worker dies before committing
    assertEquals(2, store.objects.size());
    int putsBefore = store.puts;

    SinkCore second = core(100); // restarted task, redelivered from offset 0
    second.open(TOPIC, 0);
    for (long o = 0; o < 6; o++) {
      put(second, o, framed(7, "run-" + o));
    }
    now.addAndGet(10_000);
    second.tick();
    List<String> all = new ArrayList<>();
    for (byte[] file : store.objects.values()) {
      all.addAll(runIds(file));
    }
    assertEquals(List.of("run-0", "run-1", "run-2", "run-3", "run-4", "run-5"), all); // no duplicate
    assertEquals(2, store.objects.size()); // [0..2] rewritten as is, [3..4] rewritten as [3..5]
    assertEquals(putsBefore + 2, store.puts);
  }

  @Test
  void aNewHourOrSchemaStartsANewFile() throws Exception {
    SinkCore core = core(100);
    core.open(TOPIC, 0);
    core.put(TOPIC, 0, 0, T0, framed(7, "a"), "r0", (o, e) -> errant.add(e.getMessage()));
    core.put(TOPIC, 0, 1, T0 + 3_600_000L, framed(7, "b"), "r1", (o, e) -> errant.add(e.getMessage()));
    now.addAndGet(10_000);
    core.tick();
    assertEquals(2, store.objects.size());
    assertTrue(store.objects.keySet().stream().anyMatch(k -> k.contains("/hour=13/")));
  }
}
