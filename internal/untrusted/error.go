package untrusted

// Err returns err with its message passed through Text (at most max bytes;
// MaxText when max <= 0), for errors whose text a remote party may have
// written. errors.Is and errors.As still see err and everything it wraps.
func Err(err error, max int) error {
	if err == nil {
		return nil
	}
	return &textError{err: err, max: max}
}

type textError struct {
	err error
	max int
}

func (e *textError) Error() string { return Text(e.err.Error(), e.max) }
func (e *textError) Unwrap() error { return e.err }
