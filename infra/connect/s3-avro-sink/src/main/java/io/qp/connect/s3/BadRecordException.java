package io.qp.connect.s3;

/** A record that can never be written (bad framing, unknown schema, corrupt Avro): goes to the dead-letter topic. */
public class BadRecordException extends Exception {
  public BadRecordException(String message) {
    super(message);
  }

  public BadRecordException(String message, Throwable cause) {
    super(message, cause);
  }
}
