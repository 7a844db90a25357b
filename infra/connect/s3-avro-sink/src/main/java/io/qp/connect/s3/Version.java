package io.qp.connect.s3;

final class Version {
  static final String VERSION = "0.1.0";

  private Version() {}
}
