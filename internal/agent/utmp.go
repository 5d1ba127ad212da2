package agent

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// utmp record layout of glibc on Linux (x86_64, aarch64): 384 bytes.
const (
	utmpSize        = 384
	utmpUserProcess = 7
	utmpLineOff     = 8
	utmpLineLen     = 32
	utmpUserOff     = 44
	utmpUserLen     = 32
)

type utmpRecord struct {
	Type int16
	PID  int32
	Line string
	User string
}

// parseUtmp decodes a utmp file. A trailing partial record is an error: it
// means the file is not glibc's utmp.
func parseUtmp(b []byte) ([]utmpRecord, error) {
	if len(b)%utmpSize != 0 {
		return nil, fmt.Errorf("size %d is not a multiple of the %d-byte utmp record", len(b), utmpSize)
	}
	recs := make([]utmpRecord, 0, len(b)/utmpSize)
	for off := 0; off < len(b); off += utmpSize {
		r := b[off : off+utmpSize]
		recs = append(recs, utmpRecord{
			Type: int16(binary.LittleEndian.Uint16(r[0:2])),
			PID:  int32(binary.LittleEndian.Uint32(r[4:8])),
			Line: cString(r[utmpLineOff : utmpLineOff+utmpLineLen]),
			User: cString(r[utmpUserOff : utmpUserOff+utmpUserLen]),
		})
	}
	return recs, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
