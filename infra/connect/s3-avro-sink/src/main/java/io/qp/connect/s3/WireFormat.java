package io.qp.connect.s3;

import java.nio.ByteBuffer;

/** The Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary datum. */
public final class WireFormat {
  public static final int HEADER_LENGTH = 5;

  private WireFormat() {}

  /** Schema id of a framed value; throws if the value is null, too short or has a wrong magic byte. */
  public static int schemaId(byte[] value) throws BadRecordException {
    if (value == null) {
      throw new BadRecordException("record value is null (tombstones are not VQE results)");
    }
    if (value.length < HEADER_LENGTH) {
      throw new BadRecordException("record value has " + value.length + " bytes, shorter than the 5-byte header");
    }
    if (value[0] != 0) {
      throw new BadRecordException("record value starts with magic byte " + value[0] + ", expected 0");
    }
    return ByteBuffer.wrap(value, 1, 4).getInt();
  }
}
