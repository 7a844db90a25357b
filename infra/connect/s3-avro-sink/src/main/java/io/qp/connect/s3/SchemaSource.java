package io.qp.connect.s3;

import org.apache.avro.Schema;

/** Writer schemas by registry id. */
public interface SchemaSource {
  /** The schema with this id; BadRecordException if the registry does not know it. */
  Schema byId(int id) throws BadRecordException, java.io.IOException;
}
